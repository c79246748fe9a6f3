"""Figures: curves (every job), grok, scaling, qdg, phase and lu. Plots import the engine's
results types, toy_quanta.results and toy_quanta.data, never the command-line tools or the app."""
