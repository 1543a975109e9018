from deepfleet.cli.main import main

main()
