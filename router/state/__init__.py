"""Live state behind one interface, in memory or shared in Redis: backend health and load, the
prefix index, team keys and usage."""
