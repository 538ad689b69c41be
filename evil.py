print('RAN')
def recipe(): return {}
