"""Face-video analytics engine.

The package folders read as the data path: sources → decode → (detect → align/embed → track → cluster →
dedup, in later stages) → store. Stages exchange plain dataclasses of tensors; only ``engine.store`` talks
to SQL or the object store, and only ``engine.media`` opens codecs.
"""

__version__ = "0.1.0"
