"""The composition root: builds the gateway's services in order and reloads them."""
