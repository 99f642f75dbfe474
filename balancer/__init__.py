"""The login balancer: sends each Sage CRM logon to the web server with the fewest logged-on users."""
