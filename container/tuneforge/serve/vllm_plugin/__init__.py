"""Code that runs inside the vLLM engine process (vLLM's own Python, where tuneforge is not
installed): `serve` puts this folder on the engine's PYTHONPATH, so its modules import standalone."""
