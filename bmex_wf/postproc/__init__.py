"""After the network: labels from class scores, skull add-back, quality index, tissue volumes."""
