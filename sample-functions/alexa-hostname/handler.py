"""An Alexa skill answering HostnameIntent with the host's name, as a valid Alexa response document.

The gateway routes an Alexa Skills request sent to POST / to the function named after
request.intent.name -- deploy this function as "HostnameIntent". Any other intent gets a polite
"I can't do that" answer; a body that is not an Alexa request gets an error and exit status 1.
"""

import json
import socket
import sys


def speech(text, end_session=True):
    return {
        "version": "1.0",
        "response": {
            "outputSpeech": {"type": "PlainText", "text": text},
            "card": {"type": "Simple", "title": "Hostname", "content": text},
            "shouldEndSession": end_session,
        },
    }


def main():
    try:
        request = json.loads(sys.stdin.read())["request"]
    except (ValueError, KeyError, TypeError):
        print(json.dumps({"error": "expected an Alexa Skills request"}))
        return 1
    intent = request.get("intent", {}).get("name", "") if request.get("type") == "IntentRequest" else ""
    if intent == "HostnameIntent":
        answer = speech(f"The hostname is {socket.gethostname()}.")
    elif request.get("type") == "LaunchRequest":
        answer = speech("Ask me for the hostname.", end_session=False)
    else:
        answer = speech("Sorry, I can only tell you the hostname.")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
