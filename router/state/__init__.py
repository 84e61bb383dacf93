"""Live backend state behind one interface (in memory now; Redis with [prefix-cache])."""
