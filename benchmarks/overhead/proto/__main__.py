from proto.server import main

main()
