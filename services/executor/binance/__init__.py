"""The Binance USDⓈ-M Futures adapter, split by concern (after nautilus_trader's):

* ``rest``: the python-binance client behind the process's weight governor, errors translated;
* ``user_stream``: listenKeys and the combined-stream WebSocket connections that carry them;
* ``account_state``: balances, positions, conditional orders and fills kept from those streams;
* ``bring_up``: first contact and reconciles, spread inside the weight budget;
* ``orders`` and ``protection``: entries, closes, stop-loss and take-profit;
* ``broker``: the ``Broker`` seam the executor's cycle uses, composed of the above.
"""
