"""Runnable lessons, one script each: `tfkit tutorial` lists them and runs one by number.

The scripts ship inside the package so that an installed tfkit has them too;
each is meant to be read top to bottom and run as a program, not imported.
"""
