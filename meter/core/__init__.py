"""What the aggregator, the reporter and billing share without depending on each other: time
windows and the small interfaces (ports) one side offers and a process's wiring fills in."""
