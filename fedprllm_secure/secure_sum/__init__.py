"""The secure-sum protocol seam: client and server state machines that exchange messages.

Protocol code never touches a transport; `transport.InMemoryBus` drives them in one process and
integrations (Flower) drive them across machines. See `api.py` for the contract.
"""
