"""`imgsearch serve`: the HTTP API (app.py), the duplicate review (review.py), their state."""
