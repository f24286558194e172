"""rackwatch: the command line that runs the agent, the collector, checks, probes and the demo."""
