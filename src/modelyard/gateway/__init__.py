"""The OpenAI-compatible gateway: routing, fallback, circuit breakers, health and warm-up."""
