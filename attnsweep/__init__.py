"""attnsweep: statistically sound sweeps of attention modules for medical image classification."""
