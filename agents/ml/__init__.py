"""Learning in the agents: served models, trainers, drift detectors, management modes, explanations, and
the ML connector (format and model registry, training jobs, distribution to the agents).

`model` fixes the Model protocol every served model satisfies (and the built-in numpy models);
`trainers` turns recorded telemetry into datasets and models; `drift` holds the online detectors;
`modes` the heuristic | ml | auto | shadow state machine; `explain` the per-decision explanation.
`formats` loads any model's bytes (`onnx_model`: imported ONNX models), `registry` keeps versions and
cards, `training` runs jobs in a worker process, `service` is the continuum's connector and `client` what
every agent's policies get as `ml_connector` (`wire`: its messages).
Nothing here imports spade or kubernetes; onnxruntime is imported lazily where it is used.
"""
