// The part of Tyk's TykJS namespace that auth middleware uses, evaluated before every script
// (docs/plugins-js.md). The request reaches the script with its body already a string, so
// unlike Tyk no base64 round trip happens here.
var TykJS = {
    TykMiddleware: {
        MiddlewareComponentMeta: function (configuration) {
            this.configuration = configuration;
        }
    },
    TykEventHandlers: {
        EventHandlerComponentMeta: function () {}
    }
};

(function () {
    var Meta = TykJS.TykMiddleware.MiddlewareComponentMeta;

    Meta.prototype.ProcessRequest = function (request) {
        log("ProcessRequest is not implemented");
        return request;
    };

    // Called by the gateway: the script's callback, its answer as JSON.
    Meta.prototype.DoProcessRequest = function (request, session, config) {
        var answer = this.ProcessRequest(request, session, config);
        if (!answer) {
            return undefined;
        }
        // TykJsResponse has encoded it already.
        if (typeof answer === "string") {
            return answer;
        }
        if (answer.Request) {
            // The inbound headers are not sent back; SetHeaders / DeleteHeaders say what changes.
            answer.Request.Headers = {};
        }
        return JSON.stringify(answer);
    };

    var Middleware = function (configuration) {
        Meta.call(this, configuration);
    };
    Middleware.prototype = Object.create(Meta.prototype);
    Middleware.prototype.constructor = Middleware;
    Middleware.prototype.NewProcessRequest = function (callback) {
        this.ProcessRequest = callback;
    };
    Middleware.prototype.ReturnData = function (request, sessionMeta) {
        return { Request: request, SessionMeta: sessionMeta };
    };
    Middleware.prototype.ReturnAuthData = function (request, session) {
        return { Request: request, Session: session };
    };
    TykJS.TykMiddleware.NewMiddleware = Middleware;

    // Event handlers never run here, but a file may declare one next to its middleware.
    var HandlerMeta = TykJS.TykEventHandlers.EventHandlerComponentMeta;
    HandlerMeta.prototype.Handle = function () {};
    var Handler = function () {
        HandlerMeta.call(this);
    };
    Handler.prototype = Object.create(HandlerMeta.prototype);
    Handler.prototype.constructor = Handler;
    Handler.prototype.NewHandler = function (callback) {
        this.Handle = callback;
    };
    TykJS.TykEventHandlers.NewEventHandler = Handler;
})();

function TykJsResponse(response, sessionMeta) {
    return JSON.stringify({ Response: response, SessionMeta: sessionMeta });
}

// Tyk's calls out of the VM are not offered: an auth check must not reach the network or the
// key store from inside the gateway (docs/plugins-js.md, "Not supported").
(function () {
    var absent = ["TykMakeHttpRequest", "TykBatchRequest", "TykGetKeyData", "TykSetKeyData"];
    absent.forEach(function (name) {
        globalThis[name] = function () {
            throw new Error(name + " is not available in Portcullis JavaScript middleware");
        };
    });
})();
