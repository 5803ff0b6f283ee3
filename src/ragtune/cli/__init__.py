"""The ragtune CLI: one thin module per verb group; parse, call the library, render."""
