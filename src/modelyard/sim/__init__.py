"""The simulator: a step-time model, a discrete-event continuous-batching engine, shared GPUs,
and a real-time OpenAI-compatible server driven by the same engine."""
