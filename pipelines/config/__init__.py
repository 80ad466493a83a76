"""Configuration: the study file and one trial's settings, validated. Imports no torch, Ray or scipy."""
