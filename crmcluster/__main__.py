from crmcluster.cli import main

main()
