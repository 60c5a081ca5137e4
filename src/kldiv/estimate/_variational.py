def variational(*a, **k): raise NotImplementedError
