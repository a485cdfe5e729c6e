"""Serving: gunicorn + Flask behind the SageMaker hosting contract (docs/serving.md).

server.main(argv) starts it; app.create_app builds the WSGI app; engine batches generation;
payloads/responses translate between HTTP bodies and GenerationRequests.
"""
