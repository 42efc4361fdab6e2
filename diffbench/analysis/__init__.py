"""Analyses of what a model does with its context (attention allocation), beyond whether it answers."""
