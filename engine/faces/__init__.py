"""Faces in frames, on the frames' device: detector input (``preprocess``), RetinaFace detection with
rotate-and-retry (``detect``), dlib-compatible alignment and descriptors (``embed``), the faces stage over batches
of one or many videos (``batching``), and the same for still images (``photos``)."""
