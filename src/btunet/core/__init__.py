"""Settings and checkpoints: the three job configs, typed checkpoint metadata, safetensors checkpoints
(never pickle), and the check of a model argument."""
