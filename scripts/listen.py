"""Blind listening tests between runs (samplernn-listen): build, serve to raters, count.

    python scripts/listen.py build conditions=[runs/two,runs/three] real=true test=listening/tiers
    python scripts/listen.py serve listening/tiers
    python scripts/listen.py results listening/tiers [--json]
"""

from samplernn.cli import listen

if __name__ == "__main__":
    listen()
