"""ohio_layers: offline hierarchical RL by inverting differentiable low-level controllers."""
__version__ = "0.1.0"
