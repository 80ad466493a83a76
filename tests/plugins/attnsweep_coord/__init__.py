"""Coordinate Attention (Hou et al. 2021) and the `tinyfolder` dataset format, as attnsweep plugins."""
