"""A challenge run, wired from the stages: ``run`` (the orchestrator), ``prepare`` → ``stages`` per video (the
same functions on the sequential, streaming and worker paths), ``rows`` (typed results to table rows),
``stream`` + ``threads`` (decode, models and storage overlapped), ``workers`` + ``executor`` (videos spread over
Ray actors), ``individuals`` (the challenge-wide step), ``context`` and ``summary`` (what a run reads and reports)."""
