"""ohio_layers.envs"""
