"""`ccgate doctor`: does each backend really do tool calling, and if not, how to fix it."""
