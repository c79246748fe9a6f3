"""The console entry points (toy-quanta, -collect, -analyze, -qdg, -genic, -progress, -phase,
-lu, -report, -config-reference): thin mains that parse, call the analysis and print."""

import matplotlib

# The commands write figures to files and never need a display (a cluster node has none).
# Chosen here, where the program starts, not by the figure modules: from Python (toy_quanta.api in
# a notebook) the caller's backend stays, so its own plt.show() still shows.
matplotlib.use("Agg")
