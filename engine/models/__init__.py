"""Network definitions and weight loading only: models know nothing of videos."""
