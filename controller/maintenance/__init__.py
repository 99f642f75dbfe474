"""The guide's database maintenance plan, kept by SQL Server Agent on the database server."""
