"""Applications built on the stages: film labelling (``film``, ``film_shards``, ``film_merge``), reference-person
search (``search``), the watch-list monitor (``monitor``, ``monitor_source``, ``monitor_match``, ``webhook``), and
what they share: galleries and KNN votes (``people``), one decoding pass for shots and faces (``scan``, ``shots``)."""
