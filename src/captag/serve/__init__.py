"""Serving a trained model over HTTP: `captag serve`, a JSON API with micro-batching and a web page.

`server.serve` loads the model once, checks it, binds the socket and runs uvicorn;
`app.create_app` builds the FastAPI app around a loaded model (`model.ServedModel`);
`batcher.MicroBatcher` joins the items of concurrent requests into one prediction call;
`uploads` turns uploaded bytes into images and names what is wrong with them.
"""
