"""The console entry points (toy-quanta-collect, -analyze, -qdg, -genic, -progress, -phase, -lu,
-report): thin mains that parse, call the analysis and print."""
