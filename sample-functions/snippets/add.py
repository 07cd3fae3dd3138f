def callme(param1, param2):
    # Every argument arrives as a string: /api/call/ID?param1:1,param2:1 calls callme(param1="1", param2="1").
    return int(param1) + int(param2)
