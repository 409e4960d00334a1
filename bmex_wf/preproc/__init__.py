"""Preprocessing: intensity windowing, histogram matching, N4, and the one recipe feeding the network."""
