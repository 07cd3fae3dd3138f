def callme():
    print("hello from a snippet")
    return 42
