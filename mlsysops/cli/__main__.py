from mlsysops.cli.main import main

main()
