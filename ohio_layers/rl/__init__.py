"""ohio_layers.rl"""
