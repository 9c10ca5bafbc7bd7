from mlsysops_cli.main import main

main()
