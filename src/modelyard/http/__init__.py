"""HTTP for every part that talks to engines: one keep-alive HTTP/1.1 client (client.py)."""
