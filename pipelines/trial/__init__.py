"""One trial on one split: the trainer (DDP), its checkpoints and metrics, and the executors that submit it."""
