"""Plan: demand, capacity at the SLO, placements and their cost."""
