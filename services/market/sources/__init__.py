"""Where candles, prices and exchange filters come from: Binance or a simulated feed."""
