"""Who may call the controller: principals and roles, how a request is authenticated (before its
body is read) and authorised (per route), and the credentials behind them."""
