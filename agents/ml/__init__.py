"""Learning in the agents: served models, trainers, drift detectors, management modes, explanations.

`model` fixes the Model protocol every served model satisfies (and the built-in numpy models);
`trainers` turns recorded telemetry into datasets and models; `drift` holds the online detectors;
`modes` the heuristic | ml | auto | shadow state machine; `explain` the per-decision explanation.
Nothing here imports spade or kubernetes; onnxruntime is imported lazily where it is used.
"""
