"""The bundled flows (data): ``importlib.resources.files("parlour.flows")`` finds them."""
