from deepfleet.gateway.server import main

main()
