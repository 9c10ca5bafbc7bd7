"""Machine learning in the agents: model formats and registry, training, distribution, the ML connector."""
