"""ohio_layers.inverse"""
